"""HTTP outside GraphQL: the middleware every request passes (its request id, bearer-token
authentication), the file downloads (report CSVs, image files) and their routes, and the
ASGI limit on a GraphQL POST's body.

The transport layer beside schema/ (GraphQL) and workers/ (Celery): it imports domains/ and
nothing imports it but config/ (which wires it into settings, urls and asgi) and the
GraphQL endpoint's view (schema/views.py, for the body limit).
"""
