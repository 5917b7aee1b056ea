/* libtorch_cuda.so stand-in: the one at::cuda entry point _C.so links. */
#include "stub.h"
STUB(_ZN2at4cuda26getCurrentDevicePropertiesEv)
