"""Held-out evaluation against the linear baselines: metrics, baselines, reconstruction, generative
quality, probes, uncertainty and the point cloud.
"""
