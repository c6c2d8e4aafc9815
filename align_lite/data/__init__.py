"""Data: noisy image–text pairs, ALIGN's filters, loading and preprocessing (Chapter 1)."""
