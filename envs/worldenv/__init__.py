"""A world file as a Gymnasium env: the batched core (``core``), the single env (``env``) and the natively
batched vector env (``vector_env``)."""
