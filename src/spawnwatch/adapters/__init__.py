"""Edge adapters: the only modules that read /proc (psutil) or talk to Docker.

They return spawnwatch's own dataclasses, so the pure layers (lineage, detect,
alerts) never import psutil or docker.
"""
