#!/usr/bin/env bash
# Builds or installs every binary the tests and the demo need into bin/, from the Go module proxy and
# npm only. Idempotent: each tool is keyed by its version and skipped when already present.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/bin"
mkdir -p "$BIN"

K8S_VERSION=${K8S_VERSION:-v1.37.2}
K8S_STAGING_VERSION=${K8S_STAGING_VERSION:-v0.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CONTROLLER_GEN_VERSION=${CONTROLLER_GEN_VERSION:-v0.23.0}
ACTIONLINT_VERSION=${ACTIONLINT_VERSION:-v1.7.12}
GOTESTSUM_VERSION=${GOTESTSUM_VERSION:-v1.13.0}

log() { printf '[tools] %s\n' "$*" >&2; }

# timed NAME CMD...: runs CMD and logs how long NAME took, so a slow tool shows in CI's log.
timed() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  log "$name ready in $((SECONDS - t0))s"
}

# A machine-wide cache outside the clone, so a fresh clone on a machine that built a tool before
# (a CI run, a second checkout) copies it instead of building it again.
CACHE=${VECTORDB_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vectordb-operator/tools}
mkdir -p "$CACHE"

# have NAME VERSION: true when bin/NAME was built for VERSION (restoring it from the cache if there).
have() {
  if [ -x "$BIN/$1" ] && [ -f "$BIN/.$1.version" ] && [ "$(cat "$BIN/.$1.version")" = "$2" ]; then
    [ -x "$CACHE/$1-$2" ] || { cp "$BIN/$1" "$CACHE/$1-$2.tmp" && mv "$CACHE/$1-$2.tmp" "$CACHE/$1-$2"; }
    return 0
  fi
  if [ -x "$CACHE/$1-$2" ]; then
    cp "$CACHE/$1-$2" "$BIN/$1.tmp" && mv "$BIN/$1.tmp" "$BIN/$1" && echo "$2" >"$BIN/.$1.version"
    log "$1 $2 restored from $CACHE"
    return 0
  fi
  return 1
}
mark() {
  echo "$2" >"$BIN/.$1.version"
  cp "$BIN/$1" "$CACHE/$1-$2.tmp" && mv "$CACHE/$1-$2.tmp" "$CACHE/$1-$2"
}

go_install() { # name module@version
  local name=$1 pkg=$2 version=${2##*@}
  if have "$name" "$version"; then log "$name $version cached"; return; fi
  log "installing $name $version"
  GOBIN="$BIN" CGO_ENABLED=0 go install "$pkg"
  mark "$name" "$version"
}

# -r2: stamped with their version, as release builds are: /version then says v1.37.2 rather than
# v0.0.0-master, which clients that check the server's version (helm's kubeVersion) refuse.
# -r3: both built by one go build (shared packages compiled once) and stripped (-s -w).
K8S_KEY="$K8S_VERSION-r3"

build_k8s() {
  if have kube-apiserver "$K8S_KEY" && have kube-controller-manager "$K8S_KEY"; then
    log "kube-apiserver and kube-controller-manager $K8S_VERSION cached"; return
  fi
  local dir="$BIN/.build/k8s-$K8S_VERSION"
  mkdir -p "$dir"
  log "building kube-apiserver and kube-controller-manager $K8S_VERSION (several minutes)"
  (
    cd "$dir"
    # k8s.io/kubernetes points its staging modules at ./staging; a scratch module replaces each with
    # its published release so the commands build from the module proxy alone.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module vectordb.io/k8sbuild"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      grep -oE '^\s*k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" |
        awk -v v="$K8S_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
    } >go.mod
    cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >/dev/null
    go mod tidy
    local major minor rest flags
    IFS=. read -r major minor rest <<<"${K8S_VERSION#v}"
    flags="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major"
    flags="-s -w $flags -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    # One go build for both: the packages they share are compiled once; -o names a directory.
    CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  )
  mark kube-apiserver "$K8S_KEY"
  mark kube-controller-manager "$K8S_KEY"
}

ETCD_KEY="$ETCD_VERSION-r3" # bump the suffix when the build recipe changes (r3: stripped)

build_etcd() {
  if have etcd "$ETCD_KEY"; then log "etcd $ETCD_VERSION cached"; return; fi
  local dir="$BIN/.build/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  log "building etcd $ETCD_VERSION"
  (
    cd "$dir"
    cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    printf 'module vectordb.io/etcdbuild\n\ngo 1.26\n' >go.mod
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    go mod tidy >/dev/null
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .
  )
  mark etcd "$ETCD_KEY"
}

HELM_KEY="$HELM_VERSION-r2" # -r2: stamped with its Kubernetes version, as helm's Makefile does

# install_helm stamps the Kubernetes version of helm's client-go into the binary, as a released helm
# has it. A plain go install leaves v1.20.0 as the default capabilities, and helm template, lint and
# install --dry-run then refuse every chart whose kubeVersion is newer.
install_helm() {
  if have helm "$HELM_KEY"; then log "helm $HELM_VERSION cached"; return; fi
  log "installing helm $HELM_VERSION"
  local gomod minor flags
  gomod=$(cd / && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor=$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")
  [ -n "$minor" ] || { echo "tools: no k8s.io/client-go version in $gomod" >&2; exit 1; }
  flags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags="$flags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mark helm "$HELM_KEY"
}

install_dynalite() {
  if [ -x "$ROOT/hack/dynalite/node_modules/.bin/dynalite" ]; then log "dynalite cached"; return; fi
  log "installing dynalite (npm ci)"
  (cd "$ROOT/hack/dynalite" && npm ci --no-audit --no-fund --loglevel=error)
}

want=${*:-all}
for t in $want; do
  case $t in
    all)
      timed controller-gen go_install controller-gen "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
      timed etcd build_etcd
      timed kube-apiserver+kube-controller-manager build_k8s
      timed minio go_install minio "github.com/minio/minio@$MINIO_VERSION"
      timed helm install_helm
      timed actionlint go_install actionlint "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
      timed gotestsum go_install gotestsum "gotest.tools/gotestsum@$GOTESTSUM_VERSION"
      timed dynalite install_dynalite
      ;;
    controller-gen) timed controller-gen go_install controller-gen "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION" ;;
    etcd) timed etcd build_etcd ;;
    k8s) timed kube-apiserver+kube-controller-manager build_k8s ;;
    minio) timed minio go_install minio "github.com/minio/minio@$MINIO_VERSION" ;;
    helm) timed helm install_helm ;;
    actionlint) timed actionlint go_install actionlint "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" ;;
    dynalite) timed dynalite install_dynalite ;;
    gotestsum) timed gotestsum go_install gotestsum "gotest.tools/gotestsum@$GOTESTSUM_VERSION" ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done
