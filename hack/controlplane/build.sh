#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kubectl, etcd, helm) and promtool (the
# chart's alert tests) from Go modules.
#
# Why from source: this machine has no Docker and no binary downloads, only the Go module
# proxy. Every binary is cached in $OCSP_STAPLER_BIN_DIR (default: .cache/bin at the repo
# root, git-ignored) under a name carrying its version, so a later run reuses it and a version
# bump rebuilds it. The Go build cache (~/.cache/go-build) makes a rebuild in a fresh clone
# on the same machine a matter of linking.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin_dir=${OCSP_STAPLER_BIN_DIR:-$root/.cache/bin}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

# Read the pinned versions out of the go.mod files, the single source of truth.
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$here/go.mod")
helm_version=$(awk '{for (i = 1; i < NF; i++) if ($i == "helm.sh/helm/v3") print $(i + 1)}' "$here/helm/go.mod" | head -1)
prometheus_module=$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/prometheus/prometheus") print $(i + 1)}' "$here/promtool/go.mod" | head -1)

mkdir -p "$bin_dir"

build() {  # build NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-}
  local out="$bin_dir/$name-$version"
  if [ ! -x "$out" ]; then
    echo ">> building $name $version (first time only; cached in $bin_dir)" >&2
    local start=$SECONDS
    (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
    echo ">> built $name in $((SECONDS - start)) s" >&2
  fi
  # A stable name for tests and humans: .cache/bin/<name> -> <name>-<version>
  ln -sfn "$name-$version" "$bin_dir/$name"
}

version_ldflags() {  # stamps what /version and --version report
  local v=${k8s_version#v} pkg=k8s.io/component-base/version
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  echo "-X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor" \
    "-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" \
    "-X k8s.io/client-go/pkg/version.gitVersion=$k8s_version" \
    "-X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
}

# Prometheus tags its Go module v0.<major*100+minor>.<patch>: module v0.316.0 is Prometheus 3.16.0.
prometheus_rest=${prometheus_module#v0.}
prometheus_minor=${prometheus_rest%%.*}
prometheus_version=v$((prometheus_minor / 100)).$((prometheus_minor % 100)).${prometheus_rest#*.}

promtool_ldflags() {  # stamps what `promtool --version` reports, as Prometheus's .promu.yml does
  local pkg=github.com/prometheus/common/version
  echo "-X $pkg.Version=${prometheus_version#v} -X $pkg.Revision=$prometheus_module" \
    "-X $pkg.Branch=HEAD -X $pkg.BuildUser=ocsp-stapler -X $pkg.BuildDate=19700101-00:00:00"
}

want=${*:-etcd kube-apiserver kubectl helm promtool}
for tool in $want; do
  case $tool in
    etcd) build etcd "$etcd_version" "$here" go.etcd.io/etcd/server/v3 ;;
    kube-apiserver) build kube-apiserver "$k8s_version" "$here" k8s.io/kubernetes/cmd/kube-apiserver "$(version_ldflags)" ;;
    kubectl) build kubectl "$k8s_version" "$here" k8s.io/kubernetes/cmd/kubectl "$(version_ldflags)" ;;
    helm) build helm "$helm_version" "$here/helm" helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=$helm_version" ;;
    promtool) build promtool "$prometheus_version" "$here/promtool" \
      github.com/prometheus/prometheus/cmd/promtool "$(promtool_ldflags)" ;;
    *) echo "unknown tool: $tool" >&2; exit 2 ;;
  esac
done
