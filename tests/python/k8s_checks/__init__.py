"""The checks of k8s_manifests.py, one module per concern."""
