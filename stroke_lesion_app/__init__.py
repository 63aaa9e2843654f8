"""stroke-lesion-app: find and measure stroke lesions on T1-weighted MRI, as a BIDS App."""

__version__ = "0.1.0"
