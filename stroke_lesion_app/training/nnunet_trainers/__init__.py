"""nnU-Net v2 trainer modules only: nnU-Net imports every module of this folder by name.

Add nothing but trainer modules here, with names unique across the environment.
"""
