/* Names of lg_status values, as the proto spells the server's codes. */
#include "layergate.h"

const char *lg_status_name(lg_status s) {
    switch (s) {
    case LG_OK: return "OK";
    case LG_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case LG_TENANT_NOT_FOUND: return "TENANT_NOT_FOUND";
    case LG_PAGE_NOT_FOUND: return "PAGE_NOT_FOUND";
    case LG_LSN_NOT_AVAILABLE: return "LSN_NOT_AVAILABLE";
    case LG_TENANT_UNAVAILABLE: return "TENANT_UNAVAILABLE";
    case LG_LAYER_EXISTS: return "LAYER_EXISTS";
    case LG_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case LG_FRAME_TOO_LARGE: return "FRAME_TOO_LARGE";
    case LG_INTERNAL: return "INTERNAL";
    case LG_TENANT_EXISTS: return "TENANT_EXISTS";
    case LG_LSN_BELOW_GC_HORIZON: return "LSN_BELOW_GC_HORIZON";
    case LG_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case LG_UNAUTHENTICATED: return "UNAUTHENTICATED";
    case LG_UNKNOWN_SERVER_ERROR: return "UNKNOWN_SERVER_ERROR";
    case LG_TIMEOUT: return "TIMEOUT";
    case LG_CONNECT_FAILED: return "CONNECT_FAILED";
    case LG_CONNECTION_CLOSED: return "CONNECTION_CLOSED";
    case LG_IO_ERROR: return "IO_ERROR";
    case LG_PROTOCOL_ERROR: return "PROTOCOL_ERROR";
    case LG_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    }
    return "UNKNOWN_STATUS";
}
