"""SecretFlow SPU beside our runtime: a JAX twin of the model family and an SPU runner.

Everything in this package except ``engines.py``'s orchestration runs in the
separate SPU virtual environment (``make spu-env``), which has JAX and SPU and
neither torch nor the rest of the project: the twin reads ``arch.json`` as a
plain dict and ``model.safetensors`` with numpy.
"""
