# Sourced by scripts/main.sh and scripts/*_phantom.sh (run from the repository root): installs what is missing,
# builds the Release `mmnet` tool (tests off, no nvcc), and sets $build (MMNET_BUILD_DIR, default build-rel),
# $start (seconds, before the build) and $mmnet (the tool). OpenMP waits passively: on a busy (shared) machine
# spinning worker threads slow training down several times.
bash scripts/install_deps.sh
build="${MMNET_BUILD_DIR:-build-rel}"
start=$(date +%s)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMMNET_BUILD_TESTS=OFF -DMMNET_WITH_CUDA=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target mmnet_cli
mmnet="$build/bin/mmnet"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
