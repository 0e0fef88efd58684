/* A C program consuming the installed C ABI: version, and a load that fails with a message. */
#include <stdio.h>
#include <string.h>

#include "focusvla/focusvla.h"

int main(void) {
  focusvla_policy* policy = NULL;
  const focusvla_status status = focusvla_policy_load("/nonexistent", NULL, &policy);
  if (status != FOCUSVLA_ERROR_BAD_INPUT || policy != NULL || strstr(focusvla_last_error(), "/nonexistent") == NULL) {
    fprintf(stderr, "unexpected: status %d, error '%s'\n", (int)status, focusvla_last_error());
    return 1;
  }
  printf("focusvla %s from C: a missing checkpoint is reported (%s)\n", focusvla_version(), focusvla_last_error());
  return 0;
}
