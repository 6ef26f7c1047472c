"""Seismic's callbacks: signature, payload rules, the freshness window, the use case, rejections."""
