"""The engines: the only code that imports torch (diffusers generator, adapters, upscaler, previews)."""
