"""gridvlm's Gradio app: one module per tab, the error wrapper and the display text. The only part of gridvlm that
imports gradio."""
