# Warnings and sanitizers, set per target: mproc sets no global flags.
include_guard(GLOBAL)
include(GNUInstallDirs)

function(mproc_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(MPROC_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(MPROC_SANITIZE)
    # Sanitizer flags must reach the compile and the link of every object in the program.
    target_compile_options(${target} PUBLIC
      $<BUILD_INTERFACE:-fsanitize=${MPROC_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer>)
    target_link_options(${target} PUBLIC $<BUILD_INTERFACE:-fsanitize=${MPROC_SANITIZE}>)
  endif()
endfunction()
