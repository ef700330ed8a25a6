"""The fused backend: fusion groups of the IR as Triton kernels with PyTorch fallbacks.

``codegen`` writes a kernel for each fusion group; ``runtime/`` holds the code the generated
module carries with it (launchers, autograd functions, fixed kernels such as the recurrent cell).
"""
