#pragma once
// Which kernel modules an initramfs must carry, and in which order to load them, from the image's own
// /lib/modules/<release>/modules.dep and modules.builtin (both written by depmod/kbuild). Pure code:
// texts in, paths out. The initramfs loads them with busybox insmod, one by one, in this order, so it
// needs neither modprobe nor depmod's binary indexes.
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::builder {

// The module name the kernel uses: the file name
// without directory and .ko[.gz|.xz|.zst], with '-' written as '_' ("kernel/net/bcm-phy-lib.ko" ->
// "bcm_phy_lib"); a bare name is normalised the same way ("virtio-net" -> "virtio_net").
std::string kernel_module_name(std::string_view path_or_name);

struct RequestedKernelModule {
  std::string name;        // normalised
  bool required = false;   // false: optional (left out when the kernel has no such module)
  bool built_in = false;   // in modules.builtin: nothing to load
  bool available = false;  // modular or built in; false only for a missing optional module
};

struct KernelModuleClosure {
  // Paths as modules.dep writes them (relative to /lib/modules/<release>), every module after the
  // modules it depends on; each once.
  std::vector<std::string> load_order;
  // The requested modules in the order given (duplicates dropped).
  std::vector<RequestedKernelModule> requested;
};

// Throws Error "missing module: NAME is neither in modules.dep nor in modules.builtin of kernel
// RELEASE" for a required module the kernel does not have, and Error naming the line for a malformed
// modules.dep, a dependency that modules.dep does not list itself, or a dependency cycle.
KernelModuleClosure resolve_kernel_modules(std::string_view modules_dep, std::string_view modules_builtin,
                                           const std::vector<std::string>& required,
                                           const std::vector<std::string>& optional, std::string_view kernel_release);

}  // namespace aggrik8s::builder
