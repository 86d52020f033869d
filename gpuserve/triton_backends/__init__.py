"""Triton's test backends (identity, square): C++ libraries in Triton, model.py files here that gpuserve serves
as Python-backend models, each folder on sys.path only while one imports."""
