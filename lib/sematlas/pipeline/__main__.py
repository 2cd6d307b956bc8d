"""``python -m sematlas.pipeline``: the stage runner's command line."""

from sematlas.pipeline.stages import main

if __name__ == "__main__":
    raise SystemExit(main())
