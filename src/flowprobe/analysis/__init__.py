"""Analyses of activations.h5 and trained models: probes, saturation, CKA, gradients, ablation."""
