"""The gRPC front end: the Open Inference Protocol's ``inference.GRPCInferenceService`` on ``--grpc-port``.

A sibling of ``http/`` over the same services (data plane, repository, key store, settings): ``server.py``
(grpcio's asyncio server, health, reflection, TLS, lifecycle), ``servicer.py`` (the RPCs), ``codec.py``
(messages <-> the data plane's request and answer), ``errors.py`` (statuses), ``auth.py`` (API keys from
metadata), ``proto/`` (the .proto and its compiled descriptor). Needs the ``[grpc]`` extra; nothing else in
modelapi imports this package unless ``--grpc-port`` is set.
"""
