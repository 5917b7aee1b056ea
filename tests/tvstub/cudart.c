/* libcudart.so.13 stand-in: the registration calls run while _C.so loads and do nothing; the rest abort. */
#include "stub.h"
static void *fatbin_handle[4];
void **__cudaRegisterFatBinary(void *fatbin) { (void)fatbin; return fatbin_handle; }
void __cudaRegisterFatBinaryEnd(void *handle) { (void)handle; }
void __cudaUnregisterFatBinary(void *handle) { (void)handle; }
void __cudaRegisterFunction(void) {}
void __cudaRegisterVar(void) {}
char __cudaInitModule(void **handle) { (void)handle; return 0; }
STUB(__cudaGetKernel)
STUB(__cudaLaunchKernel)
STUB(__cudaPopCallConfiguration)
STUB(__cudaPushCallConfiguration)
STUB(cudaDeviceSynchronize)
STUB(cudaEventCreateWithFlags)
STUB(cudaEventDestroy)
STUB(cudaEventElapsedTime)
STUB(cudaEventQuery)
STUB(cudaEventRecord)
STUB(cudaEventSynchronize)
STUB(cudaGetErrorString)
STUB(cudaGetLastError)
STUB(cudaStreamIsCapturing)
STUB(cudaStreamWaitEvent)
