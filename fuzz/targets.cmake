# The kernel fuzz targets: fuzz_kernels.cpp compiled with LAMINA_FUZZ_KERNEL = 1, 2, ...
# in this order. Used by fuzz/CMakeLists.txt (libFuzzer, clang) and by the tests
# (fuzz/replay_main.cpp over fuzz/corpus/<target>/, any compiler).
set(LAMINA_FUZZ_KERNELS softmax kl_logits kl_probs aggregation depthwise)
# The file parser targets: fuzz_parsers.cpp with LAMINA_FUZZ_PARSER = 1, 2 (checkpoint load, IDX read).
set(LAMINA_FUZZ_PARSERS checkpoint idx)
