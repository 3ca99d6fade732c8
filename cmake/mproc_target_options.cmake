# Warnings and sanitizers, set per target: mproc sets no global flags.
include_guard(GLOBAL)
include(GNUInstallDirs)

# MPROC_SANITIZE goes to -fsanitize= as given: address,undefined (scripts/test.sh in CI),
# thread (scripts/tsan.sh), or any list the compiler takes. ThreadSanitizer cannot share a
# program with AddressSanitizer or LeakSanitizer: that is a configure error, not a link one.
if(MPROC_SANITIZE)
  string(REPLACE "," ";" mproc_sanitizers "${MPROC_SANITIZE}")
  if("thread" IN_LIST mproc_sanitizers AND ("address" IN_LIST mproc_sanitizers OR "leak" IN_LIST mproc_sanitizers))
    message(FATAL_ERROR "MPROC_SANITIZE=${MPROC_SANITIZE}: ThreadSanitizer cannot be combined with "
                        "AddressSanitizer or LeakSanitizer; build thread (or thread,undefined) separately")
  endif()
  unset(mproc_sanitizers)
endif()

function(mproc_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(MPROC_STRICT_WARNINGS)
    # fmt's set, the same flags for GCC and Clang. GCC's -Wshadow also reports a lambda's
    # parameter or local that shadows a local of the enclosing function even when the
    # lambda does not capture it, which Clang's leaves to -Wshadow-uncaptured-local: most of
    # GCC's extra reports are tasks written `[](mproc::queue<int> q) {...}, q`. Plain
    # -Wshadow is kept for both all the same: a second name costs little, and the same
    # spelling in a lambda that does capture (`[&]`) is a real trap. On when mproc is the
    # top-level project; a project that adds mproc as a subdirectory gets it off.
    target_compile_options(${target} PRIVATE -Wshadow -Wold-style-cast -Wnon-virtual-dtor -Woverloaded-virtual)
  endif()
  if(MPROC_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(MPROC_SANITIZE)
    # Sanitizer flags must reach the compile and the link of every object in the program.
    target_compile_options(${target} PUBLIC
      $<BUILD_INTERFACE:-fsanitize=${MPROC_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer>)
    target_link_options(${target} PUBLIC $<BUILD_INTERFACE:-fsanitize=${MPROC_SANITIZE}>)
    if(MPROC_SANITIZE MATCHES "thread")
      # GCC warns that ThreadSanitizer does not model std::atomic_thread_fence. mproc's one
      # fence (futex.hpp, wakeup::announce) orders atomics against atomics, never plain
      # data, so TSan cannot misreport a race through it: the warning is noise here.
      target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-tsan>)
    endif()
  endif()
endfunction()
