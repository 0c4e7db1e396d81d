#!/usr/bin/env bash
# GPU check for a machine with one GPU (e.g. an H200): training images/s of VGG16 and
# MPNet2(2:3x3, 2:7x7) on CIFAR-10, the activation dump rate, probe and CKA stage times on VGG16,
# in about 8 minutes at most. Needs python with torch, torchvision, h5py, pandas, scikit-learn
# and pyyaml; not Snakemake. Run from anywhere; the data is the full CIFAR-10 JPEG tree:
#
#   mkdir -p device_data && tar -xzf path/to/cifar10-jpg.tar.gz -C device_data/
#   benchmarks/gpu_check.sh                  # the check (prints numbers, writes nothing kept)
#   benchmarks/gpu_check.sh --fig7           # + Fig. 7 at full scale: both MPNet2 models, 30 epochs on the
#                                            #   full CIFAR-10, dump, probes, CKA, the figure (out/fig7.pdf);
#                                            #   stage times, images/s, peak GPU memory, accuracy vs the study's
#   benchmarks/gpu_check.sh --quick          # tiny sizes: a smoke run that also works on a CPU
#   benchmarks/gpu_check.sh --fig7 --skip-throughput --epochs 1 --max-per-class 10 [--quick]
#                                            # the Fig. 7 path end to end on a CPU (--quick: narrow widths)
#
# Environment: PYTHON (default python3), FLOWPROBE_DEVICE_DATA (default device_data).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
DATA="${FLOWPROBE_DEVICE_DATA:-device_data}"

if [ ! -d "$DATA/train" ] || [ ! -d "$DATA/test" ]; then
    echo "gpu_check: $DATA/{train,test}/<class>/*.jpg is missing; unpack the CIFAR-10 JPEG tree first:" >&2
    echo "  mkdir -p $DATA && tar -xzf path/to/cifar10-jpg.tar.gz -C $DATA/" >&2
    exit 1
fi
# The library from this checkout, whether or not it is pip-installed.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py --root "$DATA" "$@"
