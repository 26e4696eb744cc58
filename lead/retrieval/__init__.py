"""Dense retrieval: texts to vectors (encode.py), vectors to ranked runs (search.py, faiss)."""
