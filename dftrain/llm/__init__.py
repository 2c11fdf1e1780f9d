"""Language-model backends, below the stages that use them (generalize rewrites captions with them,
score's LLM judge rates captions with them): embedded (SmolLM2-135M on the CPU), transformers, vLLM.

backends.py  one interface over vLLM, transformers and the embedded model
embedded.py  GGUF -> cached safetensors folder for the embedded model
"""
