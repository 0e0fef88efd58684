#pragma once
// Reader for `torch.save` state dicts (the zip format of torch >= 1.6) without Python.
//
// LibTorch's own unpickler cannot be used: it maps `collections.OrderedDict` (what
// `module.state_dict()` returns) to None. This one implements the small part of the pickle
// protocol that state dicts use (dicts, tuples, lists, strings, numbers, the tensor rebuild
// functions, persistent storage ids) and refuses everything else by name: it never calls
// arbitrary globals, so a malicious file cannot run code. Every read is bounds-checked.

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace focusvla::io {

class MappedFile;

// The (name, tensor) entries of the state dict in file order, names as stored. Throws Error
// naming the file for a file that is not a zip archive, a pickle that is truncated or malformed,
// an unsupported object, a top level that is not a dict of tensors, or a missing storage record;
// for values nested deeper than 100 levels and for self-referencing (cyclic) pickles; and, naming
// the key too, for a tensor whose size, stride or offset arithmetic overflows int64 or reaches
// past its storage.
//
// Storages that the archive stores uncompressed (torch.save stores every one so) are zero-copy
// views into the file mapped private (copy-on-write, as safetensors tensors: io/mapped_file.h),
// so a load holds the file's pages, not a copy of them, and can drop them once copied;
// `mapping`, when given, receives that mapping. Others are copied out through LibTorch's reader.
std::vector<std::pair<std::string, torch::Tensor>> read_torch_state_dict(const std::string& path,
                                                                         std::shared_ptr<MappedFile>* mapping = nullptr);

namespace detail {
// How many unpickled values are alive in this process; the tests check that a load, failed or
// not, leaves none behind (a cyclic pickle must not leak).
int64_t live_pickle_values();
}  // namespace detail

}  // namespace focusvla::io
