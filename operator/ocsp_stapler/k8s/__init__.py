"""The Kubernetes API adapter: the only package that speaks HTTP to kube-apiserver."""
