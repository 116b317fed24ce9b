#!/bin/bash
# Health check for monitoring, as the old deployment's health_check.sh: exit 0 when the shim's
# /api/v1/health reports "healthy", else 1. Usage: hack/health_check.sh [URL]
API_URL="${1:-http://localhost:8000/api/v1/health}"
EXPECTED_STATUS="healthy"

response=$(curl -s --max-time 10 "$API_URL")
status=$(echo "$response" | jq -r '.status' 2>/dev/null)

if [ "$status" = "$EXPECTED_STATUS" ]; then
    echo "API is healthy"
    exit 0
else
    echo "API is unhealthy: $response"
    exit 1
fi
