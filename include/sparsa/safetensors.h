// safetensors: read (mmap, zero-copy views) and write, byte-exact with the format:
// an 8-byte little-endian header length, a JSON header mapping tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header)
// plus an optional "__metadata__" object of string -> string, then the data.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "sparsa/tensor.h"

namespace sparsa {

struct SafetensorsFile {
  std::vector<Tensor> tensors;                   // in data-offset order; views into the mapping
  std::map<std::string, std::string> metadata;   // "__metadata__"
};

// Maps the file and validates the header: the header length inside the file, valid JSON, known
// dtypes, shape x dtype size == byte span, offsets inside the data and not overlapping. Any
// problem throws sparsa::Error naming the file and the problem.
SafetensorsFile read_safetensors(const std::filesystem::path& path);

// Writes to a temporary file beside `path` and renames it into place, so a failure never leaves
// a partial output. Tensor names must be unique and not "__metadata__".
void write_safetensors(const std::filesystem::path& path, const std::vector<Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sparsa
