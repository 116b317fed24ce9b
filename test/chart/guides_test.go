package chart

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/internal/shim"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
)

// The install guides walked on paper by a program: the commands are in an order that works, the
// example data fits the mappings that read it, and each index is created with its model's
// dimension.

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// modelDimensions are the OpenAI embedding models' native dimensions.
var modelDimensions = map[string]int{
	"text-embedding-ada-002": 1536,
	"text-embedding-3-small": 1536,
	"text-embedding-3-large": 3072,
}

// heredoc returns the body of the first here-document that opener (e.g. "cat >products.csv <<'EOF'")
// starts, up to its EOF line.
func heredoc(t *testing.T, doc, opener string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, opener+"\n")
	if !ok {
		t.Fatalf("no here-document %q", opener)
	}
	body, _, ok := strings.Cut(rest, "\nEOF\n")
	if !ok {
		t.Fatalf("here-document %q has no EOF line", opener)
	}
	return body + "\n"
}

// command returns the shell command starting with prefix, its continuation lines joined, split
// into words as a shell would (quotes removed, no expansion).
func command(t *testing.T, doc, prefix string) []string {
	t.Helper()
	i := strings.Index(doc, prefix)
	if i < 0 {
		t.Fatalf("no command %q", prefix)
	}
	var line strings.Builder
	for _, l := range strings.Split(doc[i:], "\n") {
		if s, ok := strings.CutSuffix(l, `\`); ok {
			line.WriteString(s + " ")
			continue
		}
		line.WriteString(l)
		break
	}
	return shellWords(t, line.String())
}

func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var (
		words []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// The k3s guide's products.csv goes through both of the guide's ingestions: its own CsvIngestion
// and the legacy API's, whose mapping is fixed (id, formatted_text); the index is created with the
// dimension of the one model both use.
func TestK3sGuideOnPaper(t *testing.T) {
	doc := readDoc(t, "install-k3s.md")

	rows, err := csv.NewReader(strings.NewReader(heredoc(t, doc, "cat >products.csv <<'EOF'"))).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("products.csv: %d rows, %v", len(rows), err)
	}
	header := rows[0]

	// The operator as the guide installs it: its helm command rendered, its flags parsed.
	install := command(t, doc, "helm upgrade --install vectordb-operator charts/vectordb-operator")
	var setArgs []string
	ns := ""
	for i := 5; i < len(install); i++ { // after: helm upgrade --install NAME CHART
		if install[i] == "--namespace" {
			ns = install[i+1]
			i++
			continue
		}
		setArgs = append(setArgs, install[i])
	}
	out, err := helm(t, append([]string{"template", "vectordb-operator", chartDir, "--namespace", ns}, setArgs...)...)
	if err != nil {
		t.Fatalf("the guide's helm command does not render: %v", err)
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatal(err)
	}
	dep := find(objs, "Deployment", ns, "vectordb-operator")
	if dep == nil {
		t.Fatal("no manager Deployment")
	}
	opts, _ := parseManagerArgs(t, managerArgs(t, dep))
	if !opts.Shim.APIEnabled {
		t.Fatal("the guide's install has the task API off")
	}

	// POST /api/v1/process with the guide's body, as the shim builds the ingestion.
	curl := command(t, doc, "TASK=$(curl -s -X POST http://127.0.0.1:8000/api/v1/process")
	var body string
	for i, w := range curl {
		if w == "-d" {
			body = curl[i+1]
		}
	}
	req, ferrs := shim.ParseProcessRequest([]byte(body), opts.Shim.Defaults)
	if len(ferrs) > 0 {
		t.Fatalf("the guide's request %s is refused: %+v", body, ferrs)
	}
	apiObj, err := shim.BuildIngestion(req, opts.Shim.Defaults, "t1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{apiObj.Spec.Mapping.IDColumn, apiObj.Spec.Mapping.TextColumn} {
		if !slices.Contains(header, col) {
			t.Errorf("the legacy API maps column %q, products.csv has %v", col, header)
		}
	}
	if apiObj.Spec.Source.S3.Key != "exports/products.csv" || !strings.Contains(doc, "mc cp products.csv local/"+apiObj.Spec.Source.S3.Bucket+"/exports/products.csv") {
		t.Errorf("the API reads s3://%s/%s, which the guide does not upload", apiObj.Spec.Source.S3.Bucket, apiObj.Spec.Source.S3.Key)
	}

	// The guide's own CsvIngestion.
	own := heredoc(t, doc, "kubectl apply -f - <<'EOF'\napiVersion: ingestion.vectordb.io/v1alpha1")
	var ing struct {
		Spec struct {
			Mapping   struct{ IDColumn, TextColumn string }
			Embedding struct{ Model string }
			Target    struct {
				Pinecone struct{ Index, Namespace string }
			}
		}
	}
	if err := yaml.Unmarshal([]byte("apiVersion: ingestion.vectordb.io/v1alpha1\n"+own), &ing); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{ing.Spec.Mapping.IDColumn, ing.Spec.Mapping.TextColumn} {
		if !slices.Contains(header, col) {
			t.Errorf("the guide's CsvIngestion maps column %q, products.csv has %v", col, header)
		}
	}

	// One index, one model, created with its dimension.
	if ing.Spec.Target.Pinecone.Index != apiObj.Spec.Target.Pinecone.Index {
		t.Fatalf("the CsvIngestion writes index %q, the API %q", ing.Spec.Target.Pinecone.Index, apiObj.Spec.Target.Pinecone.Index)
	}
	if ing.Spec.Embedding.Model != apiObj.Spec.Embedding.Model {
		t.Errorf("index %s gets %s vectors from the CsvIngestion and %s from the API: two vector spaces in one index",
			ing.Spec.Target.Pinecone.Index, ing.Spec.Embedding.Model, apiObj.Spec.Embedding.Model)
	}
	if apiObj.Spec.Embedding.Model != "text-embedding-ada-002" {
		t.Errorf("the legacy API path uses %s, want text-embedding-ada-002 (the old service's model)", apiObj.Spec.Embedding.Model)
	}
	checkIndexCreated(t, doc, ing.Spec.Target.Pinecone.Index, ing.Spec.Embedding.Model)

	// The DynamoDB Local table is created through a port-forward the guide starts, before use.
	pf := strings.Index(doc, "kubectl -n ingestion port-forward svc/dynamodb 8001:8000")
	create := strings.Index(doc, "aws dynamodb create-table --endpoint-url http://127.0.0.1:8001")
	if pf < 0 || create < 0 || pf > create {
		t.Errorf("the DynamoDB Local port-forward (at %d) must be a step before create-table (at %d)", pf, create)
	}
}

var indexCreate = regexp.MustCompile(`(?s)curl -s -X POST https://api\.pinecone\.io/indexes.*?-d '(\{.*?\})'`)

// checkIndexCreated finds the guide's index creation for index and checks its dimension is the
// model's.
func checkIndexCreated(t *testing.T, doc, index, model string) {
	t.Helper()
	for _, m := range indexCreate.FindAllStringSubmatch(doc, -1) {
		var body struct {
			Name      string `json:"name"`
			Dimension int    `json:"dimension"`
		}
		if err := json.Unmarshal([]byte(m[1]), &body); err != nil {
			t.Fatalf("index creation body %s: %v", m[1], err)
		}
		if body.Name != index {
			continue
		}
		if want := modelDimensions[model]; want == 0 || body.Dimension != want {
			t.Errorf("index %s is created with %d dimensions; %s gives %d", index, body.Dimension, model, want)
		}
		return
	}
	t.Errorf("the guide never creates index %s", index)
}

// The EKS guide in runnable order: the registry exists and Docker is logged in before the
// multi-arch push, namespaces exist before the ExternalSecrets are applied into them, the values
// render, and the index the API writes is created with the API model's dimension.
func TestEKSGuideOnPaper(t *testing.T) {
	doc := readDoc(t, "install-eks.md")
	order := func(steps ...string) {
		t.Helper()
		last := -1
		for _, s := range steps {
			i := strings.Index(doc, s)
			if i < 0 {
				t.Errorf("the guide lacks %q", s)
				return
			}
			if i < last {
				t.Errorf("%q comes before the step it needs (%q)", s, steps)
			}
			last = i
		}
	}
	order("aws ecr create-repository --repository-name vectordb-operator",
		"aws ecr get-login-password", "docker buildx create", "make docker-buildx IMAGE_REPO=$REGISTRY")
	order("kubectl create namespace ingestion", "kubectl apply -f external-secrets.yaml",
		"helm upgrade --install vectordb-operator charts/vectordb-operator")
	order("helm upgrade --install external-secrets", "kubectl apply -f external-secrets.yaml")

	// Every ExternalSecret goes into a namespace created earlier.
	created := map[string]bool{}
	for _, w := range regexp.MustCompile(`kubectl create namespace ([a-z0-9-]+)`).FindAllStringSubmatch(doc, -1) {
		created[w[1]] = true
	}
	_, rest, _ := strings.Cut(doc, "```yaml\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore")
	block, _, _ := strings.Cut(rest, "```")
	objs, err := decodeObjects("apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore" + block)
	if err != nil || len(objs) < 2 {
		t.Fatalf("the ExternalSecrets block: %d objects, %v", len(objs), err)
	}
	for _, o := range objs {
		if o.GetKind() == "ExternalSecret" && !created[o.GetNamespace()] {
			t.Errorf("ExternalSecret %s goes into namespace %s, which the guide does not create", o.GetName(), o.GetNamespace())
		}
	}

	// values-eks.yaml renders, and the task API writes the old index with the old model.
	_, rest, _ = strings.Cut(doc, "```yaml\nimage:\n")
	values, _, _ := strings.Cut(rest, "```")
	f := filepath.Join(t.TempDir(), "values-eks.yaml")
	if err := os.WriteFile(f, []byte("image:\n"+values), 0o600); err != nil {
		t.Fatal(err)
	}
	rendered := mustRender(t, "-f", f)
	opts, _ := parseManagerArgs(t, managerArgs(t, deployment(t, rendered)))
	d := opts.Shim.Defaults
	if d.Model != "text-embedding-ada-002" {
		t.Errorf("values-eks.yaml gives the API model %s, want text-embedding-ada-002 (the old index's)", d.Model)
	}
	checkIndexCreated(t, doc, d.Index, d.Model)
	for _, o := range rendered {
		if o.GetNamespace() != "" && o.GetNamespace() != namespace && !created[o.GetNamespace()] {
			t.Errorf("the chart puts %s %s into namespace %s, which the guide does not create", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	if sa := find(rendered, "ServiceAccount", "ingestion", "vectordb-embedder"); sa == nil {
		t.Error("no worker service account in ingestion")
	} else if _, ok, _ := unstructured.NestedSlice(sa.Object, "imagePullSecrets"); ok {
		t.Error("the guide's workers pull from ECR with the nodes' role, yet get imagePullSecrets")
	}
}

// Both install guides create the task table with the index the task API pages with (its name,
// keys and projection as internal/tasktable queries it) and turn on TTL on the attribute the
// controller writes.
func TestGuidesCreateTheTaskIndexAndTTL(t *testing.T) {
	index := regexp.MustCompile(`"IndexName":"` + regexp.QuoteMeta(tasktable.CreatedIndex) +
		`","KeySchema":\[\{"AttributeName":"task_type","KeyType":"HASH"\},\{"AttributeName":"created_at","KeyType":"RANGE"\}\],"Projection":\{"ProjectionType":"ALL"\}`)
	for _, guide := range []string{"install-eks.md", "install-k3s.md"} {
		doc := readDoc(t, guide)
		if !index.MatchString(doc) {
			t.Errorf("%s creates no index %s on task_type/created_at", guide, tasktable.CreatedIndex)
		}
		if !strings.Contains(doc, "AttributeName=task_type,AttributeType=S AttributeName=created_at,AttributeType=S") {
			t.Errorf("%s does not define the index's attributes as strings", guide)
		}
		if !strings.Contains(doc, "update-time-to-live") || !strings.Contains(doc, "AttributeName="+tasktable.AttrExpiresAt) {
			t.Errorf("%s does not turn on TTL on %s", guide, tasktable.AttrExpiresAt)
		}
	}
}
