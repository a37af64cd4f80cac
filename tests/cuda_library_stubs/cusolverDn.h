// Stand-in for CI's compile check only (see README.md): the names torch's headers mention.
#pragma once
#include "cusolver_common.h"
typedef struct cusolverDnContext* cusolverDnHandle_t;
