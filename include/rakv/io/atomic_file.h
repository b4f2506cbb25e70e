// Crash-safe file output: a reader sees either the old file or the complete new one, never a
// partial write (temp file in the same directory, fsync, rename, fsync of the directory).
#pragma once

#include <string>
#include <string_view>

namespace rakv::io {

// Replaces `path` with `contents` atomically. Throws std::runtime_error naming the path and the
// system error when any step fails; the temp file is removed on failure. After a successful write,
// temp files of the same path left by writers that were killed are removed.
void write_file_atomically(const std::string& path, std::string_view contents);

// Reads a whole file; throws std::runtime_error naming the path when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace rakv::io
