# Sourced by scripts/gpu-vulkan.sh and scripts/gpu-batch.sh on the GPU machine: unpacks the
# carried Vulkan packages (.gl/, from scripts/fetch-vulkan-debs.sh): the loader into / (as the
# device tool's README says), the headers, glslc and the validation layer into a prefix of their
# own (unpacking them into / could break the system); exports PATH, LD_LIBRARY_PATH, VK_LAYER_PATH,
# NVIDIA's ICD and VULKAN_CMAKE_ARGS (the configure flags of a Vulkan build). Expects $S (the
# summary file) and returns 1 when .gl holds no packages.
echo "== vulkan packages ($(date +%T))" | tee -a "$S"
if ! ls .gl/*.deb >/dev/null 2>&1; then
  echo "no .gl/*.deb here: run scripts/fetch-vulkan-debs.sh and carry .gl" | tee -a "$S"
  return 1
fi
PREFIX=/tmp/lockstep-vulkan-root
mkdir -p "$PREFIX"
for f in .gl/*.deb; do
  case "$(basename "$f")" in
    # The loader and the GL dispatch libraries NVIDIA's ICD needs, where the system looks.
    libvulkan1_* | libegl1_* | libglvnd0_* | libopengl0_* | libgl1_* | libglx0_* | libgles2_*)
      dpkg -x "$f" / ;;
    *) dpkg -x "$f" "$PREFIX" ;;
  esac
done
ldconfig
export PATH="$PREFIX/usr/bin:$PATH"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The validation layer's manifest names its library by file name: found via LD_LIBRARY_PATH.
export VK_LAYER_PATH="$PREFIX/usr/share/vulkan/explicit_layer.d"
ldconfig -p | grep libvulkan.so.1 | head -1 | tee -a "$S"
glslc --version 2>&1 | head -1 | tee -a "$S"
# NVIDIA's ICD: the loader's standard places first, else where the device tool's README says.
if ! ls /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json >/dev/null 2>&1; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
             /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
    if [ -f "$icd" ]; then
      export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
      egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
      [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES="$egl"
      break
    fi
  done
fi
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-(loader default)}" | tee -a "$S"
VULKAN_CMAKE_ARGS="-DLOCKSTEP_VULKAN=ON -DLOCKSTEP_VULKAN_INCLUDE_DIR=$PREFIX/usr/include"
VULKAN_CMAKE_ARGS+=" -DLOCKSTEP_GLSLC=$PREFIX/usr/bin/glslc"
export VULKAN_CMAKE_ARGS
