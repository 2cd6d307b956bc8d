"""Analyses of trained atlases: CCA, clustering, the H-VAE hierarchy, forecasting and the ablation
protocol.
"""
