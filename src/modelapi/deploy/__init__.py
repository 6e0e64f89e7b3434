"""``modelapi deploy``: Kubernetes and KServe manifests for a modelapi image (docs/deployment.md).

``manifest.py`` holds the documents and writes them as YAML with comments; ``kubernetes.py`` builds the plain
Kubernetes set (Deployment, Service, HPA, PDB, NetworkPolicy, ServiceAccount); ``kserve.py`` the
ClusterServingRuntime and InferenceService; ``commands.py`` is the command line. Nothing here talks to a cluster.
"""
