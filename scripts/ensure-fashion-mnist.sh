#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist when the files are missing and we are root.
# Otherwise zspace looks in $ZSPACE_DATA and the user cache, and downloads the
# official files (checksums verified) on first use.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing dataset-fashion-mnist with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
    echo "Fashion-MNIST not in $dir and not root: zspace will look in \$ZSPACE_DATA and ~/.cache/zspace, then download it" >&2
fi
