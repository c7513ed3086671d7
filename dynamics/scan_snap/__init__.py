"""Scan and Snap (Tian, Wang, Chen, Du; NeurIPS 2023): the 1-layer Y/Z transformer and its theory."""
