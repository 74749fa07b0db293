// Small HDF5 helpers shared by the dataset and checkpoint code: an owner for identifiers,
// a scope that keeps HDF5 from printing its error stack while Braid probes untrusted files
// (failures there are expected and reported by Braid, naming the file), and the innermost
// HDF5 error description for messages ("file write failed", "truncated file: eof = ...").
#pragma once
#include <hdf5.h>

#include <string>

namespace braid {

// Owner of one HDF5 identifier; closes it with the matching H5?close.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Handle(H5Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = -1; }
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      closer_ = other.closer_;
      other.id_ = -1;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);  // errors while closing are not actionable
    id_ = -1;
  }
  // Gives up ownership (the caller closes it and checks the result).
  hid_t release() {
    hid_t id = id_;
    id_ = -1;
    return id;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// HDF5 prints its error stack to stderr on every failed call. Inside this scope printing is
// off; the previous handler is restored after, for other code in the process.
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The description of the innermost entry of the current thread's HDF5 error stack (where
// the failure started), or "" when the stack is empty.
std::string hdf5_error_detail();

// A file-access property list for files Braid writes: the HDF5 1.8 object format or
// later, whose metadata blocks (superblock, object headers, B-trees, heaps) carry
// checksums that HDF5 verifies on read, so a flipped bit in a file's structure is an
// error instead of a wrong answer. Raw data is covered by Braid's own checksums.
hid_t make_checksummed_fapl();

}  // namespace braid
