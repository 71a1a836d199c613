#ifndef KILN_CVULKAN_SHIM_H
#define KILN_CVULKAN_SHIM_H
#include <vulkan/vulkan.h>
#endif
