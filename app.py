"""The Hugging Face Spaces entry point: gridvlm's app, built and served. Everything else is in gridvlm/app/.

    python app.py        # the same as `python -m gridvlm.app`
"""

from gridvlm.app import build_demo, launch, prepare_server

prepare_server()  # the server's own temp dir, emptied now and on exit
demo = build_demo()

if __name__ == "__main__":
    launch(demo)
