"""A command-line inference engine, standing in for a vendor's: ONNX Runtime behind the engine_command contract.

    python onnx_engine_cli.py MODEL INPUT OUTPUT [REPORT] [--exit N] [--transpose]

Loads the ONNX file, runs it on the host CPU over INPUT (.npy), writes the
logits to OUTPUT (.npy) and, given REPORT, says what ran where. ``--exit N``
fails after printing a message (a broken engine); ``--transpose`` writes the
logits transposed (an engine whose output is malformed).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("input")
parser.add_argument("output")
parser.add_argument("report", nargs="?")
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--transpose", action="store_true")
args = parser.parse_args()
if args.exit:
    print("engine: the device rejected the converted graph (error 0x2a)", file=sys.stderr)
    sys.exit(args.exit)
session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: np.load(args.input)})[0]
np.save(args.output, logits.T if args.transpose else logits)
if args.report:
    with open(args.report, "w") as f:
        json.dump({"engine": f"onnx_engine_cli (ONNX Runtime {ort.__version__})", "device": "cpu"}, f)
