/* Shared by the three stand-in CUDA libraries that let torchvision's CUDA-built _C.so load beside a
   CPU-only torch (tests only). A stand-in function that is ever called stops the process loudly. */
#ifndef TVSTUB_H
#define TVSTUB_H
#include <stdio.h>
#include <stdlib.h>
#define STUB(name) \
    void name(void) { fprintf(stderr, "CUDA stand-in called: %s\n", #name); abort(); }
#endif
