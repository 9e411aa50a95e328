"""Gradio demos of samkit (``pip install samkit[demo]``); start with ``samkit demo``.

``app.build_app(model_source)`` returns the one Blocks app; ``handlers`` holds what each tab does,
with no Gradio import, so the logic is testable without a server.
"""
