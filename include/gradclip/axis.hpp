// gradclip: which slices of a matrix unit-wise methods treat as units.
#ifndef GRADCLIP_AXIS_HPP
#define GRADCLIP_AXIS_HPP

namespace gradclip {

enum class axis {
  rows,  // each row: the output units of an out x in weight matrix, or the examples of a batch
  cols   // each column
};

}  // namespace gradclip

#endif  // GRADCLIP_AXIS_HPP
