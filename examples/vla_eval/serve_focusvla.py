"""vla-eval's model-server script for focusvla (examples/vla_eval/model_server.yaml's `script`):
the same as `python -m focusvla.vla_eval serve --config ...`."""

from focusvla.vla_eval import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *__import__("sys").argv[1:]]))
