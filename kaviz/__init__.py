"""kaviz: see where knowledge is lost when a pre-trained transformer is fine-tuned and pruned.

The library is plain Python over tensors and DataFrames; it never imports streamlit.
"""

__version__ = "0.1.0"
