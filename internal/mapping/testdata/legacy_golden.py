"""Writes legacy_golden.csv and legacy_golden.json for TestLegacyMetadataGolden.

The metadata dict is built the way the old service's EC2 default path built it
(docs/legacy-service.md §5, "Metadata, EC2 default path"), with Python's own
csv.DictReader, truthiness, str() and datetime.isoformat(), so the Go mapper is
checked against Python's behaviour rather than against itself. The text is the
old service's own sanitize_text, imported from a temporary copy of its source
(hack/legacytext/gen.py load_old; never kept in this repository).

Run: python3 legacy_golden.py [--repo /path/to/pinecone.git]   (from this directory)
"""
import argparse
import csv
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "hack", "legacytext"))
import gen  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--repo", default=gen.DEFAULT_REPO, help="a clone of github.com/matthewclickbid/pinecone")
sanitize_text = gen.load_old(ap.parse_args().repo).sanitize_text

QUESTION_ID = 239
TASK_ID = "q239-2025-01-10"
S3_KEY = "exports/239-200-300.csv"
CHUNK_INDEX = 3
CHUNK_SIZE = 1000
PROCESSED_AT = datetime.datetime(2025, 1, 10, 14, 3, 7, 123456)

LONG = "abcdefghij" * 120  # 1,200 characters; the old code kept the first 1,000

header = ["id", "formatted_text", "record_type", "title", "price", "city",
          "created_at", "is_active", "source", "notes"]
rows = [
    ["3001", "<p>Lot #12: <b>Vintage</b> clock &amp; stand</p> Closes 2025-01-10T22:45:23Z",
     "lot", "Vintage clock", "120.50", "Boise", "2025-01-10T22:45:23Z", "true", "", ""],
    [" 3002 ", "Pickup on 01/03/2025 at <i>Main St.</i><br/>Bring ID!",
     "auction", "Pickup, Main St.", "0.00", "Salt Lake City", "2025-01-02", "false",
     "metabase", " keep spaces "],
    ["3003", LONG, "", "", "0", "Reno", "", "", "x", ""],
]

with open("legacy_golden.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)

out = []
with open("legacy_golden.csv", newline="") as f:
    records = list(csv.DictReader(f))
chunk_id = "chunk_%04d" % CHUNK_INDEX
for idx, record in enumerate(records):  # idx: the index within the chunk
    row_id = record.get("id")
    text = sanitize_text(record["formatted_text"])
    metadata = {
        "text": text[:1000],
        "source": "s3_csv",
        "s3_key": S3_KEY,
        "chunk_id": chunk_id,
        "record_index": idx,
        "task_id": TASK_ID,
        "question_id": QUESTION_ID,
        "row_id": row_id,
        "processed_at": PROCESSED_AT.isoformat(),
    }
    for key, value in record.items():
        if key != "formatted_text" and key not in metadata and value:
            metadata[key] = str(value)
    out.append({
        "row": CHUNK_INDEX * CHUNK_SIZE + idx,
        "vector_id": f"{QUESTION_ID}.{row_id.strip()}",
        "keys": list(metadata.keys()),
        "metadata": metadata,
    })

with open("legacy_golden.json", "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
