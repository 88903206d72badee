// LOCKSTEP_FAULT parsing: integer fields (layer, position) take only integers that fit.
#include <gtest/gtest.h>

#include "parity/fault_env.h"
#include "util/error.h"

namespace lockstep {
namespace {

TEST(ParseFault, AcceptsTheDocumentedForms) {
  FaultSpec f = parse_fault("layer_corrupt:1:10:4");
  EXPECT_EQ(f.kind, FaultSpec::LayerCorrupt);
  EXPECT_EQ(f.layer, 1);
  EXPECT_EQ(f.position, 10);
  EXPECT_EQ(f.magnitude, 4.f);
  f = parse_fault("nan:2147483647");
  EXPECT_EQ(f.kind, FaultSpec::NaN);
  EXPECT_EQ(f.position, 2147483647);
  f = parse_fault("kv_drift:0.5");
  EXPECT_EQ(f.kind, FaultSpec::KvDrift);
  EXPECT_EQ(f.magnitude, 0.5f);
}

TEST(ParseFault, IntegerFieldsRejectWhatIsNotAnIntegerInRange) {
  for (const char* bad :
       {"nan:1e30", "nan:2147483648", "nan:1.5", "nan:-1", "nan:0x10", "nan: 3",
        "layer_corrupt:1e9:0:1", "layer_corrupt:0:99999999999:1", "layer_corrupt:0:3.0:1"}) {
    SCOPED_TRACE(bad);
    try {
      parse_fault(bad);
      ADD_FAILURE() << "accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("is not an integer in 0..2147483647"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace lockstep
