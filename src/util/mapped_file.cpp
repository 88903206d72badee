#include "util/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "util/error.h"

namespace lockstep {

MappedFile MappedFile::open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO (or a tty, or some devices) would otherwise wait for a writer
  // forever, before the type check below could reject it. It changes nothing for a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw InputError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file" +
                     (S_ISDIR(st.st_mode)    ? " (a directory)"
                      : S_ISFIFO(st.st_mode) ? " (a FIFO)"
                                             : ""));
  }
  MappedFile m;
  m.size_ = uint64_t(st.st_size);
  if (m.size_ > 0) {
    void* p = mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw InputError(path + ": cannot map: " + std::strerror(e));
    }
    m.data_ = static_cast<const uint8_t*>(p);
    m.mapped_ = true;
  }
  ::close(fd);
  return m;
}

MappedFile MappedFile::from_bytes(std::vector<uint8_t> bytes) {
  MappedFile m;
  m.owned_ = std::move(bytes);
  m.data_ = m.owned_.data();
  m.size_ = m.owned_.size();
  return m;
}

MappedFile::MappedFile(MappedFile&& o) noexcept {
  *this = std::move(o);
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this == &o) return *this;
  if (mapped_) munmap(const_cast<uint8_t*>(data_), size_);
  mapped_ = std::exchange(o.mapped_, false);
  size_ = std::exchange(o.size_, 0);
  bool owned = !mapped_ && o.data_ == o.owned_.data();
  owned_ = std::move(o.owned_);
  data_ = owned ? owned_.data() : o.data_;
  o.data_ = nullptr;
  return *this;
}

MappedFile::~MappedFile() {
  if (mapped_) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace lockstep
