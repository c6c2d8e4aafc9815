"""align_lite: ALIGN (Jia et al., ICML 2021) rebuilt small, as an executable book.

The package is organised one concept per module, in the order the book teaches them:
``align_lite.data`` (noisy pairs, filters, loading) first; models, loss, training and
evaluation follow in later chapters.
"""

__version__ = "0.1.0"

#: Where the project lives; the notebooks' first cell installs from here on Colab.
REPO_URL = "https://github.com/align-lite/align-lite"
