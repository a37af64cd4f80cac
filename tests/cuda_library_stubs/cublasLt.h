// Stand-in for CI's compile check only (see README.md): the names torch's headers mention.
#pragma once
typedef struct cublasLtContext* cublasLtHandle_t;
